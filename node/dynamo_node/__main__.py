"""`python -m dynamo_node` is `dynamo-node`."""

from .main import main

main()
