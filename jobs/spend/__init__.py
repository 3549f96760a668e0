"""Spend control: what LLM calls cost, the budgets that bound them, and members' effect caps."""
