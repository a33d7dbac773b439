"""Generated from proto/ by clients/python/regenerate.sh; do not edit."""
