"""Learning from live traffic: shadow answers from the other tier, a judge, user feedback, a label store."""
