"""Commands to devices: checked, stored, delivered, answered."""
