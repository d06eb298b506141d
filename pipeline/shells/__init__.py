"""The `sei` command line (cli, its shared base, the loop's commands). The top layer: it may
import anything in the pipeline, and nothing in the pipeline imports it. The app, in
dashboard/, is the other shell."""
