from trtdebug.entrypoint import main

main()
