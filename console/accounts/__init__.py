"""Staff accounts: passwords, sign-in and its rate limit, and the commands that manage them."""
