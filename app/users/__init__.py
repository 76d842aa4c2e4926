"""Users (people and actors), their training records, and integration clients."""
