"""`python -m dynamo_node` is `dynamo-node`."""

from .extras import node_main

node_main()
