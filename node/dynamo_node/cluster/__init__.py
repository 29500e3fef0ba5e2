"""The cluster processes: quorum coordination, gossip, the claimant (staged membership
changes), partition transfers, anti-entropy and refill of a replacement.
"""
