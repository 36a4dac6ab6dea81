/* emulation stand-in (see ../cuda_rt_emu.h) */
#include "../cuda_emu.h"
