/* Built when MPI is not: the MPI communicator says what is missing. */
#ifndef CLV_HAVE_MPI
#include "../util/util.h"
#include "comm.h"

int clv_comm_mpi(clv_comm **out, const clv_rankinfo *ri, double timeout_s, clv_status *st) {
    (void)ri, (void)timeout_s;
    *out = NULL;
    return clv_fail(st, CLV_EUNSUPPORTED,
                    "this job needs the MPI communicator (ranks on several hosts, or started by mpirun), and this build "
                    "has no MPI: install libopenmpi-dev and rebuild");
}
#else
typedef int clv_mpi_stub_unused;
#endif
