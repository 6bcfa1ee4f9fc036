"""Twilio: SMS, voice calls, Verify, and the status callbacks and replies Twilio posts back."""
