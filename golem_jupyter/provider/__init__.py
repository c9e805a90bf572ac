"""The provider side: an agent that rents this machine out on the market (see :mod:`.agent`)."""
