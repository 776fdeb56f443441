"""The edges a client talks to: the control socket server and client, and the HTTP endpoint."""
