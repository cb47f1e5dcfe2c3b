//! Where progress lines of slow steps go: stderr for the CLI, a `Vec` in tests.

/// Receives one line per step started, finished or advanced. `Send`, so a provider's futures that
/// hold it are too.
pub trait Progress: Send {
    /// Reports a step.
    fn step(&mut self, message: &str);
}

impl<F: FnMut(&str) + Send> Progress for F {
    fn step(&mut self, message: &str) {
        self(message);
    }
}
