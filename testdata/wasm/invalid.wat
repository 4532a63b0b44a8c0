;; Parses, but does not validate: the function promises an i32 and returns nothing.
(module
  (func (export "handle_event") (result i32)))
