"""In-memory stand-ins for the services' ports, one module per service, shared by the unit
tests of its handlers and of its servicer."""
