"""The workflow builder: a member turns a conversation into a workflow.

The member drafts a definition with its workflow tools (`tools`); the core checks it exactly as
`teammates workflow apply` does and posts it as a plan (`plans`), which only the person who
asked (or an admin) can start. Nothing is scheduled until then."""
