import fedwarden_no_such_package  # noqa: F401
