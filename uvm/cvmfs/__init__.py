"""A user-space CernVM-FS client and publisher speaking the real repository format."""
