"""The base room: user errors, the command-line plumbing every command shares, atomic files."""
