"""SendGrid: email through the Mail Send API, and the Signed Event Webhook it posts back."""
