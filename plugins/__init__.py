"""Built-in post-pass and verification plugins, registered like any third-party plugin."""
