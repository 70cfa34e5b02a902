"""Domain-adaptation methods (``adapt=``): one class per method, one yaml each in conf/adapt/ that
names the class by its full path (nothing to register here)."""
