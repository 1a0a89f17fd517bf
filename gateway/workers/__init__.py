"""Several gateway processes on one port: the supervisor, and metrics one scrape sees as a single target."""
