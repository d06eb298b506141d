"""The store: every SQL query (store), the schema's migration steps (migrations), a Store in
a child process for heavy stages (store_process). The only code that talks SQL. Imports
core only."""
