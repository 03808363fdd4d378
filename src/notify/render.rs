//! Rendering a notification document into each channel's message.
