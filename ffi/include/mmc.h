/* MemCache C API: include this one header. */
#ifndef MMC_H
#define MMC_H

#include "mmc_def.h"
#include "mmc_client.h"
#include "mmc_service.h"

#endif /* MMC_H */
