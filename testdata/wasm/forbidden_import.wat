;; Imports a socket function a restricted host ABI does not allow.
(module
  (import "wasi_snapshot_preview1" "sock_open" (func (param i32 i32 i32) (result i32)))
  (func (export "handle_event") (param i32 i32) (result i32) i32.const 0))
