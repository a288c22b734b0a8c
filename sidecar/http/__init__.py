"""The HTTP surfaces: the ingress (calls, sends, attaches, awakeables, event streams) and the
admin API, with the error shapes and input checks they share."""
