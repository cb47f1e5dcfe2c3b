//! Where progress lines of slow steps go: stderr for the CLI, a `Vec` in tests.

/// Receives one line per step started, finished or advanced.
pub trait Progress {
    /// Reports a step.
    fn step(&mut self, message: &str);
}

impl<F: FnMut(&str)> Progress for F {
    fn step(&mut self, message: &str) {
        self(message);
    }
}
