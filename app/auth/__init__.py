"""Identity: password and client-credential logins, tokens, lockout, role guards."""
