from moe_health.cli import main

main()
