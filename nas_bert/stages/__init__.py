"""One function per pipeline stage; entry points compose a config and call one of these."""
