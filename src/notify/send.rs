//! Delivering one rendered notification: an HTTP POST or a command.
