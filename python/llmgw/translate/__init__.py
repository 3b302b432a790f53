"""Pure translations between OpenAI chat completions (the canonical format) and other providers' wire formats."""
