;; A valid event handler: imports one host function, exports handle_event and a small memory.
(module
  (import "bpfship_host" "log" (func $log (param i32 i32)))
  (memory (export "memory") 1 16)
  (func (export "handle_event") (param $ptr i32) (param $len i32) (result i32)
    local.get $ptr
    local.get $len
    call $log
    local.get $len))
