"""``fedwarden demo``: a secure training under attack, between processes on 127.0.0.1."""
