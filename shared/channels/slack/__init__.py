"""Slack: Block Kit cards with Approve and Reject, and the clicks Slack posts back."""
