;; A component wrapping a core module, exporting a function.
(component
  (core module $m
    (func (export "run") (result i32) i32.const 42))
  (core instance $i (instantiate $m))
  (func $run (result u32) (canon lift (core func $i "run")))
  (export "run" (func $run)))
