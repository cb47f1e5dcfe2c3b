//! A user's crate that tests its mesh with meshfed (see tests/).
