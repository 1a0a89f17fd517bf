"""Who may call and how much: authentication, per-key admission, rate and size limits."""
