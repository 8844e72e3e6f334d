"""
The C{hypertcp} command line: talk to a server, and manage its tokens.

Each subcommand comes from an C{add_parser(subparsers)} function listed in
L{hypertcp.cli.main.COMMANDS}.  It adds its parser and sets C{run}, a function taking the
parsed arguments and returning the exit status, with C{set_defaults}.  A
command kept in a module of its own (bench, certs) joins by adding its
module's C{add_parser} to the list; L{connection_options} and L{connect}
give it the same C{--host}/C{--port}/C{--token} handling as the rest.
"""

