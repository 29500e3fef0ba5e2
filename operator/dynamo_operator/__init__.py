"""dynamokv operator: reconciles DynamoCluster resources into running, safely scaled clusters."""
