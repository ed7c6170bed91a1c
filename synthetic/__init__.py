"""Generated training scenes with exact instance masks, written as releases."""
