"""The spawn zone: everything the zygote loads.  Standard library only: no trio, no threads, no attrs."""
