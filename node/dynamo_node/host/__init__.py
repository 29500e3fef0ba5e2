"""Facts about the host the node runs on: usable memory (the container limit) and the
file-descriptor budget.
"""
