"""HTTP: the WSGI app and its pages, TLS and basic auth, and the server that runs it."""
