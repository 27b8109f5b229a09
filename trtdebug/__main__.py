from trtdebug.cli import main

main()
