"""``python -m serving {retriever,generator,rag} [flags]``: the container entry point of the services."""

import sys

from serving.entrypoints import main

sys.exit(main())
