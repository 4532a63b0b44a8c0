;; Shared memory and atomics: the threads proposal, refused unless the policy opts in.
(module
  (memory (export "memory") 1 1 shared)
  (func (export "handle_event") (param i32 i32) (result i32)
    i32.const 0
    i32.const 1
    i32.atomic.rmw.add))
