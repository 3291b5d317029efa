# One module per sensor.  Every driver takes its bus (I2C, UART, Pin, I2S, ADC)
# ready-made, allocates its buffers once in __init__ and reads into them.
