# Optional CUDA backend. The toolkit is detected at configure time; without it the engine is
# CPU-only and every GPU test reports itself skipped. With it, kernels are built for sm_90
# (Hopper); the binary still runs on machines without a GPU and falls back to the CPU.
set(DSPARK_HAVE_CUDA OFF)
if(DSPARK_CUDA)
  include(CheckLanguage)
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  check_language(CUDA)
  file(GLOB DSPARK_CUDA_SOURCES CONFIGURE_DEPENDS kernels/cuda/*.cu engine/cuda/*.cu engine/cuda/*.cpp
       models/drafters/cuda/*.cpp)
  if(CMAKE_CUDA_COMPILER AND DSPARK_CUDA_SOURCES)
    # Hopper unless the caller names another target; set before enable_language, which would
    # otherwise pick nvcc's default (sm_75).
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES 90)
    endif()
    enable_language(CUDA)
    find_package(CUDAToolkit REQUIRED)
    # CMake 3.25 knows no C++20 flag for nvcc 13; nvcc accepts -std=c++20.
    set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
    set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
    set(CMAKE_CUDA_STANDARD 20)
    add_library(dspark_cuda STATIC ${DSPARK_CUDA_SOURCES})
    target_link_libraries(dspark_cuda PUBLIC dspark_engine CUDA::cudart CUDA::cublas CUDA::cublasLt)
    target_compile_definitions(dspark_cuda PUBLIC DSPARK_HAVE_CUDA=1)
    target_compile_options(dspark_cuda PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:--expt-relaxed-constexpr -lineinfo>)
    set(DSPARK_HAVE_CUDA ON)
    message(STATUS "dspark: CUDA backend ON (${CMAKE_CUDA_COMPILER}, sm_${CMAKE_CUDA_ARCHITECTURES})")
  else()
    message(STATUS "dspark: CUDA backend OFF (no toolkit or no CUDA sources)")
  endif()
endif()
