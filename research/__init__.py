"""Research code: never imported by the server."""
