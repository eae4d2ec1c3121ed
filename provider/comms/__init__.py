"""Communication features shared by rules and channels: message templates and global variables."""
