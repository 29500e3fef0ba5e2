"""`python -m dynamo_node` is `dynamo-node`."""

from dynamo_node.extras import node_main

node_main()
